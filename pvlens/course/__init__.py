import os

"""The pvlens course: reduced-size switch shared by every chapter (PVLENS_COURSE_QUICK=1)."""
QUICK = os.environ.get("PVLENS_COURSE_QUICK") == "1"
