-- wrk script: every request is a POST of BENCH_BODY (JSON) with the bench's bearer key.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
