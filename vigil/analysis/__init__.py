"""Stage 3, analysis: the SAP's analyses over the analysis datasets, written to results.* as one run."""
