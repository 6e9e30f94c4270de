"""Start mtl_perception_node (and optionally RViz).

  ros2 launch mtl_perception_ros mtl_perception.launch.py model:=/path/to/model.pt \
      points:=/sensors/lidar/points image:=/sensors/camera/image_raw rviz:=true

`image` and `camera_info` remap the inputs of the default camera (`camera`); a rig with several
cameras lists them in its params file (`cameras` and a block per camera, docs/node.md "Cameras")
and puts the node in the drivers' namespace or remaps NAME/image_raw there.

fastdds_profile:=true (default) sets FASTDDS_DEFAULT_PROFILES_FILE to the shipped
config/fastdds_large_images.xml for the processes started here (the node, RViz), so full-size
images travel through Fast DDS shared memory; the publishers of the images (camera driver, bag
player) need the same profile. fastdds_profile:=false leaves the environment as it is.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare('mtl_perception_ros')
    arguments = [
        DeclareLaunchArgument('model', description='Checkpoint file (.pt) to load.'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution([share, 'config', 'mtl_perception.yaml']),
                              description='Node parameters (YAML).'),
        DeclareLaunchArgument('namespace', default_value='', description='Namespace of the node and its topics.'),
        DeclareLaunchArgument('use_sim_time', default_value='false', description='Use /clock (bag replay).'),
        DeclareLaunchArgument('device', default_value='auto', description='auto | cpu | cuda | cuda:N'),
        DeclareLaunchArgument('points', default_value='points', description='Input PointCloud2 topic.'),
        DeclareLaunchArgument('image', default_value='camera/image_raw',
                              description="Input Image topic of the default camera 'camera'."),
        DeclareLaunchArgument('camera_info', default_value='camera/camera_info',
                              description="Input CameraInfo topic of the default camera 'camera'."),
        DeclareLaunchArgument('rviz', default_value='false', description='Also start RViz with our config.'),
        DeclareLaunchArgument('fastdds_profile', default_value='true',
                              description='true: FASTDDS_DEFAULT_PROFILES_FILE = the shipped '
                                          'config/fastdds_large_images.xml (full-size images over shared '
                                          'memory); false: leave the environment as it is.'),
    ]
    # Before the Node actions: a launched process takes the launch context's environment.
    fastdds_profile = SetEnvironmentVariable(
        'FASTDDS_DEFAULT_PROFILES_FILE', PathJoinSubstitution([share, 'config', 'fastdds_large_images.xml']),
        condition=IfCondition(LaunchConfiguration('fastdds_profile')))
    node = Node(
        package='mtl_perception_ros',
        executable='mtl_perception_node',
        name='mtl_perception',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'), {
            'model_path': LaunchConfiguration('model'),
            'device': LaunchConfiguration('device'),
            'use_sim_time': LaunchConfiguration('use_sim_time'),
        }],
        remappings=[('points', LaunchConfiguration('points')), ('camera/image_raw', LaunchConfiguration('image')),
                    ('camera/camera_info', LaunchConfiguration('camera_info'))],
    )
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='log',
        arguments=['-d', PathJoinSubstitution([share, 'config', 'mtl_perception.rviz'])],
        parameters=[{'use_sim_time': LaunchConfiguration('use_sim_time')}],
        condition=IfCondition(LaunchConfiguration('rviz')),
    )
    return LaunchDescription(arguments + [fastdds_profile, node, rviz])
