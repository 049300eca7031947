"""tensorflow-datasets builders (ArrayRecord output, no TensorFlow needed) for every source."""
