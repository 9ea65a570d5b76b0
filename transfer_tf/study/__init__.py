"""Study planning and execution: flagfiles -> steps (binary runs) -> local or Ray executor."""
