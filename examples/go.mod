module github.com/jobstep/jobstore/examples

go 1.26.0

require github.com/jobstep/jobstore v0.0.0

replace (
	github.com/jobstep/jobstore => ../
	github.com/jobstep/jobstore/x/prom => ../x/prom
)
