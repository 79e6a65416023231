"""The checker engine: a VM checked the way a student uses it, alone or a class at once; no Pulumi, no cloud."""
