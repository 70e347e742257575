"""Learning-parity benchmark: does learning through the Tailor service match Vowpal Wabbit in process?

scikit-learn's bundled ``digits`` data set becomes a 10-action contextual bandit (the Contextual Bandit
Bake-off's construction): the pixels are the request context, each digit is a catalog action, and the
reward is 1 for the right digit. The same rounds are played through a real ``tailor serve`` process
(Decide + ReportRewards over gRPC) and by an in-process VW with the exact flags, features and cost
mapping the service uses. If the service's plumbing (joins, reward windows, the learner queue, feature
encoding) lost or distorted learning signal, its mean reward would fall behind the reference.

Run from the project root: ``.venv/bin/python -m benchmarks.digits`` (see README.md).
"""
