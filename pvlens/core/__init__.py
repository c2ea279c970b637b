"""The model and what runs on it: loading, chat formatting, hook points, steering, generation.

Everything else in pvlens builds on these modules; they import nothing from the rest of pvlens
(but `pvlens.errors`).
"""
