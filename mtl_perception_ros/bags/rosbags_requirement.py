"""rosbags, the one runtime requirement that rosdep cannot install (no rosdep key; see package.xml).

mtl_bag_play and mtl_bag_record import it inside `try`; on ImportError they call
`report_missing_rosbags`, so a user who installed the package with rosdep alone reads one line
saying what to install instead of a traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

ROSBAGS_REQUIREMENT = 'rosbags==0.11.9'     # the pin of requirements/constraints.txt (test_packaging checks)
MISSING_ROSBAGS_EXIT_CODE = 2
# sys.argv[0] of each program: the console script, or the module file under `python -m`
PROGRAMS = {'mtl_bag_play': 'mtl_bag_play', 'bag_play.py': 'mtl_bag_play',
            'mtl_bag_record': 'mtl_bag_record', 'bag_record.py': 'mtl_bag_record'}


def missing_rosbags_message(program: str, error: ImportError) -> str:
    return f"{program} needs the Python package 'rosbags' ({error}): pip install {ROSBAGS_REQUIREMENT}"


def report_missing_rosbags(error: ImportError) -> NoReturn:
    """In mtl_bag_play / mtl_bag_record: print the one-line message and exit with code 2.

    Imported by any other program, raise ImportError with the same message instead.
    """
    program = PROGRAMS.get(Path(sys.argv[0]).name) if sys.argv else None
    if program is None:
        raise ImportError(missing_rosbags_message('this module', error)) from error
    print(missing_rosbags_message(program, error), file=sys.stderr)
    raise SystemExit(MISSING_ROSBAGS_EXIT_CODE)
