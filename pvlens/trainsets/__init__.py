"""Training data for persona work: trait datasets (normal / level I / level II) and screening
datasets by projection difference before training."""
