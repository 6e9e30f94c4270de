"""ROS message <-> numpy conversions and output builders (duck-typed; no rclpy or message package import).

The builders make rclpy messages or rosbags messages alike, through a message factory
(message_factory: `ros_message`; bags.typestore: `bag_message`).
"""
