"""What the stages in factory/stages/ are built from: the stage contract (configs, column
declarations, resources, batch mapping), the chat step and its generate -> clean ->
reject-on-failure call, the crash guard that turns one record's crash into a rejected row,
and the per-stage metrics."""
