"""Transport: getting sealed objects off the device (local directory now; spool, S3, MQTT next)."""
