"""One module per agent kind; each turns rendered step inputs into an output."""
