# SPDX-License-Identifier: AGPL-3.0-or-later
pytest_plugins = ["tests.testhost.fixtures", "tests.deploy.fixtures"]
