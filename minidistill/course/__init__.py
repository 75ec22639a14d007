"""Course assignments built from the library itself (see ``docs/course/index.md``).

* :mod:`minidistill.course.tasks`: the modules, their tasks and the marked solution blocks;
* :func:`build`: a student copy with the blocks of modules 0..N hollowed out;
* :func:`grade`: each task's tests against a student copy, with a time limit per task.
"""

from .builder import build
from .grading import format_table, grade
from .tasks import MODULES, TASKS, CourseError, CourseModule, Task, find_blocks, package_blocks

__all__ = ["MODULES", "TASKS", "CourseError", "CourseModule", "Task", "build", "find_blocks", "format_table",
           "grade", "package_blocks"]
