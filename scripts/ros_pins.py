#!/usr/bin/env python3
"""Per-distro pins of the ROS 2 wheels, derived from the one list requirements/ros-packages.txt.

    python3 scripts/ros_pins.py generate DISTRO     # resolve on PyPI, write constraints-ros-DISTRO.txt
    python3 scripts/ros_pins.py check               # every pin file covers the list (offline)
    python3 scripts/ros_pins.py requirements DISTRO # the list's packages DISTRO releases (setup_env.sh)

The list names base packages (ros-X). On PyPI each distro D releases ros-X as a metapackage
ros-D-X that pins ros-X to D's version (ros-jazzy-rclpy 7.1.6 requires ros-rclpy==7.1.6). `generate`
resolves the metapackages of the whole list in one go (pip's dry run, with the Python pins of
constraints.txt) and writes every ros-* distribution of the result, dependencies included, as
D's pin file. A package with no ros-D-X is not released for D and stays out of D's pins, except
for the distro of the plain names (DEFAULT_DISTRO), whose own ros-X releases they are.
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / 'requirements'
PACKAGE_LIST = REQUIREMENTS / 'ros-packages.txt'
PYTHON_PINS = REQUIREMENTS / 'constraints.txt'
DEFAULT_DISTRO = 'kilted'       # the plain ros-X names on PyPI are Kilted's releases
NOT_RELEASED = '# not released for {distro}: '


def pins_path(distro):
    return REQUIREMENTS / f'constraints-ros-{distro}.txt'


def listed_packages():
    """Base names (ros-X) of requirements/ros-packages.txt, in its order."""
    lines = (line.split('#')[0].strip() for line in PACKAGE_LIST.read_text().splitlines())
    return [line.lower() for line in lines if line]


def read_pins(distro):
    """({name: version}, names recorded as not released) of constraints-ros-DISTRO.txt."""
    pins, not_released = {}, set()
    prefix = NOT_RELEASED.format(distro=distro)
    for line in pins_path(distro).read_text().splitlines():
        if line.startswith(prefix):
            not_released.update(line[len(prefix):].split())
        elif line and not line.startswith('#'):
            name, version = line.split('==')
            pins[name.strip().lower()] = version.strip()
    return pins, not_released


def resolve(requirements, python):
    """{name: version} of everything pip would install for `requirements` into an empty venv."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / 'report.json'
        command = [python, '-m', 'pip', 'install', '--dry-run', '--ignore-installed', '--quiet',
                   '--report', str(report), '-c', str(PYTHON_PINS), *requirements]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise LookupError(result.stderr)
        installs = json.loads(report.read_text())['install']
    return {item['metadata']['name'].lower().replace('_', '-'): item['metadata']['version'] for item in installs}


def generate(distro, python):
    requirements = {name: f'ros-{distro}-{name[len("ros-"):]}' for name in listed_packages()}
    not_released = []
    while True:
        try:
            resolved = resolve(sorted(requirements.values()), python)
            break
        except LookupError as error:
            missing = re.search(r'No matching distribution found for (\S+)', str(error))
            base = next((b for b, r in requirements.items() if missing and r == missing.group(1)), None)
            if base is None or requirements[base] == base:
                sys.exit(f'pip could not resolve the {distro} wheels:\n{error}')
            print(f'[pins] no {requirements[base]} on PyPI', file=sys.stderr)
            if distro == DEFAULT_DISTRO:
                requirements[base] = base       # its own plain release
            else:
                del requirements[base]
                not_released.append(base)
    metapackages = set(requirements.values()) - set(requirements)
    pins = {name: version for name, version in resolved.items()
            if name.startswith('ros-') and name not in metapackages}
    python_pinned = {re.split(r'[=<>;\s]', line)[0].lower().replace('_', '-')
                     for line in PYTHON_PINS.read_text().splitlines() if line and not line.startswith('#')}
    unpinned = sorted(set(resolved) - set(pins) - metapackages - python_pinned - {'pip', 'setuptools', 'wheel'})
    if unpinned:
        print(f'[pins] not pinned in {PYTHON_PINS.name} (add them): {" ".join(unpinned)}', file=sys.stderr)
    lines = [f'# ROS 2 {distro.capitalize()} wheels: exact versions, dependencies included (pip -c).',
             f'# Generated from ros-packages.txt by `python3 scripts/ros_pins.py generate {distro}`: do not edit.']
    if not_released:
        lines.append(NOT_RELEASED.format(distro=distro) + ' '.join(sorted(not_released)))
    lines += [f'{name}=={version}' for name, version in sorted(pins.items())]
    pins_path(distro).write_text('\n'.join(lines) + '\n')
    print(f'[pins] wrote {pins_path(distro).relative_to(REQUIREMENTS.parent)}: {len(pins)} pins'
          + (f', not released: {" ".join(not_released)}' if not_released else ''))


def check():
    """Problems (strings) of the pin files: a listed package neither pinned nor marked not released."""
    problems = []
    for path in sorted(REQUIREMENTS.glob('constraints-ros-*.txt')):
        distro = path.stem[len('constraints-ros-'):]
        pins, not_released = read_pins(distro)
        for name in listed_packages():
            if name not in pins and name not in not_released:
                problems.append(f'{path.name}: {name} is in ros-packages.txt but not pinned: '
                                f'run python3 scripts/ros_pins.py generate {distro}')
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    generate_parser = commands.add_parser('generate', help='resolve DISTRO on PyPI and write its pin file')
    generate_parser.add_argument('distro')
    generate_parser.add_argument('--python', default=sys.executable,
                                 help='interpreter whose pip resolves (its Python version picks the wheels)')
    commands.add_parser('check', help='every pin file covers ros-packages.txt')
    requirements_parser = commands.add_parser('requirements', help="print the listed packages DISTRO releases")
    requirements_parser.add_argument('distro')
    args = parser.parse_args()

    if args.command == 'generate':
        generate(args.distro, args.python)
    elif args.command == 'check':
        problems = check()
        print('\n'.join(problems) or f'[pins] ok: {len(listed_packages())} packages, '
              + ', '.join(p.stem for p in sorted(REQUIREMENTS.glob('constraints-ros-*.txt'))))
        sys.exit(1 if problems else 0)
    else:
        if not pins_path(args.distro).is_file():
            sys.exit(f'no pins for ROS 2 {args.distro} wheels ({pins_path(args.distro)}): '
                     f'generate them with python3 scripts/ros_pins.py generate {args.distro}')
        pins, _ = read_pins(args.distro)
        print('\n'.join(name for name in listed_packages() if name in pins))


if __name__ == '__main__':
    main()
