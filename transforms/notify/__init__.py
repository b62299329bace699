"""Art. 23 notices: campaign files, the planner that picks each line's notice, schedules and daily
caps, message rendering, stable job ids, Avro and JSON encoding, and the composite transforms
``BuildNotificationJobs`` and ``SummariseJobs``."""
