"""tweetgen shared layer: domain (pure), services (use cases), adapters (AWS, database)."""
