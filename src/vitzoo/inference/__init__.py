"""Running a trained network without training it: evaluation on a labeled split (which model, which
preprocessing, which precision) and predictions for image files, shared by the commands."""
