"""The tweetgen command and the docker-free local stack."""
