"""The decision log at scale: writing, exporting, VW reading it back and `tailor evaluate`, against VW learning."""
