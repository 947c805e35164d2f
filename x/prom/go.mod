module github.com/jobstep/jobstore/x/prom

go 1.26.0

replace github.com/jobstep/jobstore => ../..
