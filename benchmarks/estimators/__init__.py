"""Off-policy estimators (IPS, SNIPS, DR) against exactly known policy values: bias, RMSE, coverage."""
