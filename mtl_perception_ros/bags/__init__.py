"""rosbag2 reading and writing with the rosbags library (no rclpy)."""
