"""The Google edge: the Pulumi components, the Compute API calls and the verification resource.

Nothing is imported here, so that `provisioner.gcp.compute_api` loads without Pulumi.
"""
