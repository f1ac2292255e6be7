pytest_plugins = ["tests.testhost.fixtures"]
