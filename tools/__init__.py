"""Client tools that talk to a running service over HTTP: the eval runner, the post-deploy smoke
check, and their shared wire reader.
"""
