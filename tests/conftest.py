pytest_plugins = ["tests.testhost.fixtures", "tests.deploy.fixtures"]
