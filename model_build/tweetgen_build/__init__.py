"""Model build: tweets to LSTM and GPT-2 generators packaged as SageMaker TensorFlow Serving artifacts."""
