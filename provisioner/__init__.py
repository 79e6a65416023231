"""course-vm: a ready, verified course VM on Google Cloud with one `pulumi up`."""
