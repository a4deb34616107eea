"""What a person looks at: slice overlays (PNG, wandb images) and the HTML report of a prediction run."""
