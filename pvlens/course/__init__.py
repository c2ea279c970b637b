"""The pvlens course (course/chapters): `QUICK` shrinks sample counts so every chapter runs in the test suite.

Importing the course pins pvlens's compute dtype to float32 unless the user chose one
(PVLENS_COMPUTE_DTYPE): the checks compare a student's float32 TransformerLens code with pvlens's
references, and on CPUs with fast bf16 (AMX) pvlens would otherwise compute those in bf16, whose
rounding exceeds the checks' tolerances.
"""

import os

QUICK = os.environ.get("PVLENS_COURSE_QUICK") == "1"
os.environ.setdefault("PVLENS_COMPUTE_DTYPE", "float32")
