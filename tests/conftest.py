import os

# TensorFlow's C++ start-up chatter hides test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(items):
    # tf.test.TestCase defines test_session() (a deprecated context manager, not a test), which
    # pytest collects and TensorFlow then skips as "Not a test": leave it out of the count.
    items[:] = [item for item in items if item.name != "test_session"]
