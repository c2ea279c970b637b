"""Checks for the course's exercises: `from pvlens.course.checks import ch00`, then
`ch00.check_<name>(student_fn)` right after the exercise cell.

Each check compares the student's function with pvlens's own reference on small inputs (a tiny
random model or synthetic tensors), raises AssertionError with a hint on a mismatch and prints
"✓ <name> passed" on success. `check_results_<name>` functions check results on the default
model and shipped vectors within tolerances.
"""
