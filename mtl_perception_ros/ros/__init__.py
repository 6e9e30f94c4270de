"""The thin rclpy layer: the node, shutdown signals, bag player and recorder."""
