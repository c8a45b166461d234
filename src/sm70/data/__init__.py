"""`sm70 data build`: heterogeneous instruction sources -> one clean, decontaminated SFT set with a data card."""
