"""ament_python package definition; also installs with plain pip into a virtual environment."""
from glob import glob

from setuptools import find_packages, setup

package_name = 'mtl_perception_ros'

setup(
    name=package_name,
    version='0.1.0',
    # Only the runtime package goes onto a vehicle; training/ runs from the source tree.
    packages=find_packages(include=[package_name, package_name + '.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.rviz') + glob('config/*.xml')),
        ('share/' + package_name + '/config/a2d2', glob('config/a2d2/*')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='mtl_perception_ros maintainers',
    maintainer_email='perception@example.com',
    description='Multi-task LiDAR + camera perception (BEV detection, semantic segmentation) for ROS 2.',
    license='Apache-2.0',
    # colcon test runs pytest when the 'test' extra names it (setuptools >= 72 drops tests_require,
    # and colcon then falls back to unittest, which finds no tests here).
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'mtl_perception_node = mtl_perception_ros.ros.node:main',
            'mtl_bag_play = mtl_perception_ros.ros.bag_play:main',
            'mtl_bag_record = mtl_perception_ros.ros.bag_record:main',
            'mtl_perception_build_engines = mtl_perception_ros.core.tensorrt_engines:main',
        ],
    },
)
