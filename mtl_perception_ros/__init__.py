"""mtl_perception_ros: multi-task LiDAR + camera perception for ROS 2.

The modules split in two kinds (see README, "Code map"): a ROS-free core (numpy + torch) that
training, offline replay and the node share, and a thin ROS layer that imports rclpy.
"""
