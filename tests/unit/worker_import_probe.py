"""Imported only if the python kind wrongly imports a module before checking the allow-list."""

IMPORTED = True


def run(ctx: object) -> dict[str, bool]:
    return {"ran": True}
