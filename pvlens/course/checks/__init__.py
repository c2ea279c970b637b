"""Checks for the course exercises: one module per chapter (`from pvlens.course.checks import ch04`)."""
