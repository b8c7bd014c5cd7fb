"""What a person reads: `ttsopt explain`, the plots and the HTML report."""
