# Managed by saline (state chef.backend): edits here are overwritten.
publish_address '10.0.0.1'
postgresql.md5_auth_cidr_addresses = ["samehost", "samenet", "192.168.1.0/24", "10.0.0.0/24"]
