"""Forecasting: learning parameters, scalers, windows, networks, training and metrics.

Import the pieces from their modules (`tsloom.forecast.params`, `.training`, …); this
package does not import PyTorch until a network is built or trained.
"""
