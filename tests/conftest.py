pytest_plugins = ["deploykit_testing.plugin"]
