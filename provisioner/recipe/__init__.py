"""The recipe engine: settings in, cloud-init user-data and the instance metadata out; no Pulumi, no cloud."""
