"""Studies: `compare`, its report and plots, and the run store."""
