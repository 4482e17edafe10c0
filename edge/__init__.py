"""rclstm-edge: the device side. Never imports TensorFlow."""

__version__ = "0.1.0"
