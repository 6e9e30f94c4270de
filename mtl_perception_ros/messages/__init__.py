"""ROS message <-> numpy conversions and output builders (duck-typed; no rclpy import)."""
