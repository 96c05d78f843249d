"""The planner: demand forecasts, the replenishment policy and generative drafting of orders and promotions."""
