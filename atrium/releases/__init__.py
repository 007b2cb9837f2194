"""The release pipeline: watchers -> registry -> deployment -> quality gates -> canary -> promote.

Watchers notice new model releases; the pipeline (a durable DBOS workflow) registers each as a
version, deploys it on standby, runs the quality gates, shifts live traffic onto it in canary
steps through the gateway's weighted routing with automated analysis, and promotes it or rolls
it back.
"""
