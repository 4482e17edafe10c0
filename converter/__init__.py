"""rclstm-edge converter: training, evaluation and TFLite conversion (the only place TensorFlow lives)."""
