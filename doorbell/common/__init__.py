"""Small helpers shared by the device and the phone, importing nothing else from doorbell.

The phone is a separate program that shares only the format with the device: what
both sides need besides ``doorbell.sealing`` (topic names, MQTT and S3 client set-up,
secret files, file locks) lives here, so neither has to import the other's modules.
"""
