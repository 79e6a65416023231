"""`course-vm`: argument parsing, one module per command group, and the Automation API driver."""
