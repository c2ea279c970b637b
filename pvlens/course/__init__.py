import os

"""The pvlens course (course/chapters): `QUICK` shrinks sample counts so every chapter runs in the test suite."""
QUICK = os.environ.get("PVLENS_COURSE_QUICK") == "1"
