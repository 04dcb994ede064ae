"""The built-in step kinds' executors: `async def run(ctx: StepContext, params) -> dict`."""
